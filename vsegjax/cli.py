"""What the command-line entry points share: absl flag parsing with one-line errors."""

from __future__ import annotations

import ast

from absl import flags


def parse_flags(argv: list[str]) -> list[str]:
    """absl flag parsing with one-line errors naming the config file or field at fault."""
    try:
        return flags.FLAGS(argv)
    except flags.Error as e:
        raise SystemExit(f"error: {e}") from None
    except (KeyError, AttributeError) as e:
        # ml_collections' KeyError holds "'field'\nDid you mean ...?": print it as text
        # (str() of a KeyError is the repr of its message, escapes and all).
        message = str(e.args[0]) if e.args else str(e)
        while len(message) > 1 and message[0] == message[-1] and message[0] in "'\"":
            try:  # a nested field's message comes quoted once more
                message = str(ast.literal_eval(message))
            except (ValueError, SyntaxError):
                break
        key, _, hint = message.partition("\n")
        key = key.strip("\"'")
        bad = [a.split("=")[0] for a in argv if a.startswith("--config.")
               and key in a.split("=")[0].split(".")]
        where = f" ({', '.join(bad)})" if bad else ""
        hint = f" {hint.strip()}" if hint.strip() else ""
        raise SystemExit(f"error: unknown config field '{key}'{where}.{hint} See the config "
                         f"file for the fields it defines.") from None
    except OSError as e:
        cause = e.__cause__ or e
        raise SystemExit(f"error: cannot load the config file: {cause}") from None
