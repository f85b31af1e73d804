"""The feed of changes: every change is an event row; consumers follow them in order."""
