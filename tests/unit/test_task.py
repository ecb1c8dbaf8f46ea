"""Task options, templates and descriptions."""

import pytest

from plait.errors import InvalidTaskError
from plait.task import TaskDescription, TaskKind, TaskOptions, TaskTemplate, make_options


def test_make_options_applies_checked_changes():
    opts = make_options(TaskOptions(), {"timeout": 2, "retries": 3, "shell": False})
    assert (opts.timeout, opts.retries, opts.shell) == (2, 3, False)
    assert not opts.is_plain
    assert TaskOptions().is_plain


@pytest.mark.parametrize(
    ("changes", "words"),
    [
        ({"retries": "3"}, "retries"),
        ({"retries": True}, "retries"),
        ({"timeout": -1}, "negative"),
        ({"shell": "yes"}, "shell"),
        ({"colour": "red"}, "unknown task option 'colour'"),
    ],
)
def test_bad_options_are_named_in_the_error(changes, words):
    with pytest.raises(InvalidTaskError, match=words):
        make_options(TaskOptions(), changes)


def test_template_reads_the_default_task_description_once():
    async def sim(x, task_description={"ranks": 4}):  # noqa: B006 - the reference's idiom
        return x

    tmpl = TaskTemplate.build(sim, TaskKind.FUNCTION, TaskOptions())
    assert tmpl.description == {"ranks": 4}
    assert tmpl.is_async
    assert tmpl.name == "sim"


def test_template_rejects_a_task_description_default_that_is_not_a_dict():
    def bad(task_description="x"):
        return None

    with pytest.raises(TypeError, match="must be a dict"):
        TaskTemplate.build(bad, TaskKind.FUNCTION, TaskOptions())


def test_call_options_exclude_names_the_function_declares():
    def run(x, timeout):
        return x

    tmpl = TaskTemplate.build(run, TaskKind.FUNCTION, TaskOptions())
    assert "timeout" not in tmpl.call_options
    assert "retries" in tmpl.call_options


def test_description_reads_with_the_reference_keys():
    desc = TaskDescription(
        "task.000001",
        "sim",
        TaskKind.EXECUTABLE,
        print,
        (1,),
        {"a": 2},
        "wf-1",
        TaskOptions(backend="hpc"),
        {"ranks": 2},
    )
    desc.command = "mpirun -n 2 'my app' --flag"
    assert desc["uid"] == "task.000001"
    assert desc["args"] == (1,) and desc["kwargs"] == {"a": 2}
    assert desc["workflow_id"] == "wf-1"
    assert desc["executable"] == "mpirun"
    assert desc["arguments"] == ["-n", "2", "my app", "--flag"]
    assert desc["function"] is None
    assert desc["target_backend"] == "hpc"
    assert desc["task_backend_specific_kwargs"] == {"ranks": 2}
    assert desc.get("missing", "default") == "default"
    ref = desc.as_reference_dict()
    assert ref["command"] == "mpirun -n 2 'my app' --flag"
    assert ref["metadata"]["dependencies"] == []
