"""yim: an instant-messaging server for hundreds of millions of users."""

__version__ = "0.1.0"
