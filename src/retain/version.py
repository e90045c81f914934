"""retain's version, in a module of its own: every module may import it without importing the
package's ``__init__`` (whose lazy API imports ``run``, which would make a cycle)."""

__version__ = "0.1.0"
