# SPDX-License-Identifier: Apache-2.0
"""The option table, --help, completions and the man page agree."""
import re
import subprocess
from pathlib import Path

from conftest import KC, SRC

MAN = (SRC / "man" / "kcheckpoint.1").read_text()


def kc(*args):
    return subprocess.run([str(KC), *args], capture_output=True, text=True)


def commands():
    p = kc("__complete")
    assert p.returncode == 0
    cmds = p.stdout.split()
    assert {"dump", "restore", "state", "recover", "check", "inspect"} <= set(cmds)
    return cmds


def options(cmd):
    p = kc("__complete", cmd)
    assert p.returncode == 0
    return [line.split("\t")[0] for line in p.stdout.splitlines()]


def man_section(cmd):
    """The part of the man page about one command: from its .SS to the next."""
    m = re.search(r'^\.SS "?' + cmd + r'\b.*?$(.*?)(?=^\.SS|^\.SH)', MAN, re.M | re.S)
    assert m, f"man page has no .SS for '{cmd}'"
    return m.group(1).replace("\\-", "-")


def test_every_option_in_help_and_man_page():
    for cmd in commands():
        help_text = kc(cmd, "--help").stdout
        section = man_section(cmd)
        opts = options(cmd)
        assert opts, cmd
        for opt in opts:
            assert re.search(re.escape(opt) + r"\b", help_text), f"'{opt}' missing from '{cmd} --help'"
            assert re.search(re.escape(opt) + r"\b", section), f"'{opt}' of '{cmd}' missing from the man page"


def test_man_page_documents_exit_codes():
    exits = re.search(r"^\.SH EXIT STATUS(.*?)^\.SH", MAN, re.M | re.S).group(1)
    header = (SRC / "include" / "kc" / "error.h").read_text()
    for name, num in re.findall(r"(KC_EXIT_\w+) = (\d+)", header):
        assert re.search(r"^\.IP " + num + r"\b", exits, re.M), f"exit code {num} ({name}) undocumented"


def test_completion_scripts_use_the_binary():
    bash = (SRC / "completions" / "kcheckpoint.bash").read_text()
    zsh = (SRC / "completions" / "_kcheckpoint").read_text()
    assert "__complete" in bash and "__complete" in zsh
    # and the bash completion really completes: run it
    script = f"""source {SRC}/completions/kcheckpoint.bash
PATH={KC.parent}:$PATH
COMP_WORDS=(kcheckpoint dump --lock); COMP_CWORD=2; _kcheckpoint; echo "${{COMPREPLY[@]}}"
COMP_WORDS=(kcheckpoint res); COMP_CWORD=1; _kcheckpoint; echo "${{COMPREPLY[@]}}"
"""
    out = subprocess.run(["bash", "-c", script], capture_output=True, text=True).stdout.splitlines()
    assert out[0].strip() == "--lock-timeout"
    assert out[1].strip() == "restore"


def test_version_and_help():
    assert re.match(r"kcheckpoint \d+\.\d+\.\d+", kc("--version").stdout)
    p = kc("--help")
    assert p.returncode == 0 and "dump" in p.stdout
    p = kc()
    assert p.returncode == 2
