"""``bridge.sim`` talks to the bridge over the wire only: it imports none of its modules.

The one exception is ``bridge.errors``: a leaf of exception classes with no behaviour, so
the simulator's errors hang off the project's single root (``BridgeError``).
"""

import ast
from pathlib import Path

import bridge.sim

ALLOWED = {"bridge.errors"}


def test_the_simulator_imports_nothing_of_the_bridge() -> None:
    for source in Path(bridge.sim.__file__).parent.glob("*.py"):
        tree = ast.parse(source.read_text(), str(source))
        assert ast.get_docstring(tree), f"{source.name} needs a module docstring"
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            else:
                continue
            for name in names:
                if name == "bridge" or name.startswith("bridge."):
                    assert name.startswith("bridge.sim") or name in ALLOWED, (
                        f"{source.name} imports {name}"
                    )
