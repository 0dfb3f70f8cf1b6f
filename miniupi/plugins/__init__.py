"""Default plugins, registered through the `miniupi` entry point group like any other."""
