"""Companion package of the course."""
