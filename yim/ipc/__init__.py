"""Channels between the processes of one node (``yim serve --workers N``)."""
