"""Shell completion, generated from the parser itself so it never falls behind a new command or flag."""

from __future__ import annotations

import argparse


def _commands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:  # argparse keeps subcommands only here
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def script(parser: argparse.ArgumentParser, shell: str) -> str:
    """A bash completion function (zsh loads it through bashcompinit): commands, then each command's flags and the
    values of flags with choices; file names elsewhere."""
    commands = _commands(parser)
    cases = []
    for name, sub in sorted(commands.items()):
        flags = sorted(s for a in sub._actions for s in a.option_strings if s.startswith("--"))
        takes = [a for a in sub._actions if a.option_strings and a.nargs != 0]  # flags that take a value
        values = [f"      {'|'.join(a.option_strings)}) COMPREPLY=($(compgen -W \"{' '.join(a.choices)}\" -- "
                  "\"$cur\")); return;;" for a in takes if a.choices]
        files = [s for a in takes if not a.choices for s in a.option_strings]
        if files:
            values.append(f"      {'|'.join(files)}) COMPREPLY=($(compgen -f -- \"$cur\")); return;;")
        words = " ".join(flags + [c for a in sub._actions if not a.option_strings and a.choices for c in a.choices])
        cases.append(f"    {name})\n" + ("      case \"$prev\" in\n" + "".join(v + "\n" for v in values)
                                         + "      esac\n" if values else "")
                     + f"      COMPREPLY=($(compgen -W \"{words}\" -- \"$cur\"));;")
    body = "\n".join([
        "_reconcile() {",
        "  local cur=\"${COMP_WORDS[COMP_CWORD]}\" prev=\"${COMP_WORDS[COMP_CWORD-1]}\"",
        "  if [ \"$COMP_CWORD\" -eq 1 ]; then",
        f"    COMPREPLY=($(compgen -W \"{' '.join(sorted(commands))} --help --version\" -- \"$cur\")); return",
        "  fi",
        "  case \"${COMP_WORDS[1]}\" in",
        *cases,
        "  esac",
        "  if [ ${#COMPREPLY[@]} -eq 0 ]; then",
        "    COMPREPLY=($(compgen -f -- \"$cur\"))",
        "  fi",
        "}",
        "complete -F _reconcile reconcile",
    ])
    if shell == "zsh":
        body = "autoload -U +X bashcompinit && bashcompinit\n" + body
    return body + "\n"
