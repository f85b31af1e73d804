"""Notification channels the bridge delivers itself: Microsoft Teams (msteams.py)."""
