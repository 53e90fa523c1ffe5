"""The command line: the demo runs end to end and accounts for every frame; bench rejects unknown groups."""
from fastproto.cli import main


def test_demo_runs_the_core_and_both_stacks(capsys):
    assert main(["demo", "--frames", "3000", "--sockets", "50", "--echoes", "64"]) == 0
    out = capsys.readouterr().out
    assert "delivered" in out and "ip bad checksum" in out
    for model in ("inline", "netisr", "kcont", "lrp", "puller"):
        assert f"    {model} " in out


def test_bench_rejects_an_unknown_group(capsys):
    assert main(["bench", "no-such-group"]) == 2
    assert "unknown group" in capsys.readouterr().err
