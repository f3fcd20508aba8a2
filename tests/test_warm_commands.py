"""The warm command server of the DVC tests runs a command as a new process would (tests/warm_commands.py)."""

import os
import subprocess

from tests import warm_commands


def test_a_command_gets_the_callers_arguments_folder_environment_output_and_code_and_a_copys_own_code(tmp_path):
    # A copy of featpipe whose `featpipe` prints where it runs from, then exits with the code it is given.
    copy = tmp_path / "copy"
    (copy / "pipeline").mkdir(parents=True)
    (copy / "pipeline" / "__init__.py").write_text("")
    (copy / "pipeline" / "cli.py").write_text(
        "import os, sys\n"
        "def main():\n"
        "    print(__file__, os.getcwd(), os.environ['ASKED'], sys.argv[1:])\n"
        "    print('to stderr', file=sys.stderr)\n"
        "    return int(sys.argv[1])\n"
    )
    address = str(tmp_path / "server")
    server = warm_commands.start(address, modules=["json"])
    try:
        clients = warm_commands.write_clients(tmp_path / "bin", address)
        env = dict(os.environ, PATH=f"{clients}{os.pathsep}{os.environ['PATH']}", PYTHONPATH=str(copy), ASKED="yes")
        for code in (0, 3):
            ran = subprocess.run(["featpipe", str(code), "x y"], cwd=tmp_path, env=env, capture_output=True, text=True)
            assert ran.returncode == code
            assert ran.stdout == f"{copy / 'pipeline' / 'cli.py'} {tmp_path} yes ['{code}', 'x y']\n"
            assert ran.stderr == "to stderr\n"
    finally:
        server.kill()
        server.wait()
