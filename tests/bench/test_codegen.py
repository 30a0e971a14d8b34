"""bench codegen's pieces: the sandbox beside the plain subprocess it replaced, and the quick configuration of the example."""

from bench.codegen import _config, _plain_run, sandbox_overhead


def test_the_plain_runner_passes_on_passing_tests_only():
    assert _plain_run("def f(x):\n    return x + 1", "assert f(1) == 2")
    assert not _plain_run("def f(x):\n    return x", "assert f(1) == 2")


def test_both_sides_of_the_overhead_pass_every_run():
    figures = sandbox_overhead(runs=2)
    assert figures["plain_subprocess"]["runs"] == figures["sandbox"]["runs"] == 2
    assert figures["ratio_sandbox_over_plain_p50"] == round(figures["sandbox"]["ms_p50"] / figures["plain_subprocess"]["ms_p50"], 2)


def test_the_quick_configuration_is_the_example_cut_down(tmp_path):
    cfg = _config(tmp_path, quick=True)
    assert cfg.type == "codegen" and cfg.runs_dir == tmp_path / "runs" and cfg.training.max_steps == 3
    assert len((tmp_path / "eval.jsonl").read_text().splitlines()) == 6 and cfg.teacher.max_pool == 6
    code_only = _config(tmp_path / "code-only", quick=False, plan=False, methods=["sft"])
    assert code_only.training.max_steps == -1 and code_only.plan is False and code_only.methods == ["sft"]
