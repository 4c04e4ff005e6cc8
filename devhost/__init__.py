"""The local host: runs function_app.py's functions and Durable orchestrations on this machine."""
