"""Builders shared by the tests: data sets, synthetic images, a fake Hub, TFLite files."""
