"""The measure engine: real runs on this machine, in fresh subprocesses, with a stop rule and statistics."""
