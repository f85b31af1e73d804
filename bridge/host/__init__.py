"""What the bridge uses of the machine it runs on, kept out of `core` (which does no I/O):
the API keys file (`apikeys`), the Debian tools it runs (`tools`: promtool, amtool,
prometheus, alertmanager), and asyncio's processes, tasks and signals (`aio`)."""
