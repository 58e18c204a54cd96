# SPDX-License-Identifier: Apache-2.0
"""The option table, --help, completions and the man page agree."""
import re
import shutil
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


def bash_complete(words, cword, cwd=None):
    """COMPREPLY of the bash completion for COMP_WORDS=words, one per line."""
    arr = " ".join("'" + w.replace("'", "'\\''") + "'" for w in words)
    # the line as bash would have it: words split at ':' and '=' come back together
    line = ""
    for i, w in enumerate(words):
        glue = "" if i == 0 or w in (":", "=") or words[i - 1] in (":", "=") else " "
        line += glue + w
    line = line.replace("'", "'\\''")
    script = f"""source {SRC}/completions/kcheckpoint.bash
PATH={KC.parent}:$PATH
COMP_WORDS=({arr}); COMP_CWORD={cword}; COMP_LINE='{line}'; COMP_POINT=${{#COMP_LINE}}
_kcheckpoint; printf '%s\\n' "${{COMPREPLY[@]}}"
"""
    p = subprocess.run(["bash", "-c", script], capture_output=True, text=True, cwd=cwd)
    return [l for l in p.stdout.splitlines() if l]


def test_bash_completion(tmp_path):
    assert "__complete" in (SRC / "completions" / "kcheckpoint.bash").read_text()
    assert bash_complete(["kcheckpoint", "dump", "--lock"], 2) == ["--lock-timeout"]
    assert bash_complete(["kcheckpoint", "res"], 1) == ["restore"]
    # option values, also as --opt=value (bash splits at '=')
    assert bash_complete(["kcheckpoint", "dump", "--compress", "zs"], 3) == ["zstd", "zstd:1", "zstd:3", "zstd:9"]
    # bash splits zstd:3 at ':': the values after it, not pids
    assert bash_complete(["kcheckpoint", "dump", "--compress", "zstd", ":", ""], 5) == ["1", "3", "9"]
    assert bash_complete(["kcheckpoint", "dump", "--compress", "zstd", ":", "3"], 5) == ["3"]
    assert sorted(bash_complete(["kcheckpoint", "dump", "--thp", "="], 3)) == ["always", "madvise", "never"]
    assert sorted(bash_complete(["kcheckpoint", "dump", "--thp", "=", ""], 4)) == ["always", "madvise", "never"]
    # file names with spaces stay whole
    (tmp_path / "my ckpt.tar.zst").write_bytes(b"")
    (tmp_path / "other").mkdir()
    assert bash_complete(["kcheckpoint", "restore", "my"], 2, cwd=tmp_path) == ["my ckpt.tar.zst"]
    assert bash_complete(["kcheckpoint", "dump", "--output", "=", "my"], 4, cwd=tmp_path) == ["my ckpt.tar.zst"]
    assert bash_complete(["kcheckpoint", "dump", "-D", "o"], 3, cwd=tmp_path) == ["other"]
    # pids of the whole machine: pid 1 is no terminal's
    assert "1" in bash_complete(["kcheckpoint", "state", ""], 2)


def test_zsh_completion_specs():
    """zsh's _arguments specs as the script builds them (zsh's completion
    system itself is stubbed: _arguments prints what it was given)."""
    assert shutil.which("zsh"), "zsh is not installed (scripts/setup.sh --tests installs it)"
    script = f"""PATH={KC.parent}:$PATH
_arguments() {{ print -rl -- "$@"; state=pids; return 1 }}
compadd() {{ shift; print -rl -- "PIDS" ${{(P)1}} }}
_describe() {{ }}
source {SRC}/completions/_kcheckpoint
words=(kcheckpoint dump --compress ''); CURRENT=4
_kcheckpoint
"""
    p = subprocess.run(["zsh", "-f", "-c", script], capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    lines = p.stdout.splitlines()
    comp = [l for l in lines if l.startswith("--compress[")]
    assert comp and comp[0].endswith(r":value:(zstd zstd\:1 zstd\:3 zstd\:9 none)"), comp
    assert "*:pid:->pids" in lines
    pids = lines[lines.index("PIDS") + 1:]
    assert "1" in pids, "every pid of the machine"


def test_version_and_help():
    assert re.match(r"kcheckpoint \d+\.\d+\.\d+", kc("--version").stdout)
    p = kc("--help")
    assert p.returncode == 0 and "dump" in p.stdout
    p = kc()
    assert p.returncode == 2
