from config.celery_app import GPU_QUEUE, GPU_TASKS, app, default_task, gpu_task


def test_only_json_crosses_the_broker():
    assert app.conf.task_serializer == "json"
    assert app.conf.accept_content == ["json"]
    assert app.conf.result_serializer == "json"


def test_queues_and_routes():
    assert {q.name for q in app.conf.task_queues} == {"default", "gpu"}
    assert app.conf.task_default_queue == "default"
    assert app.conf.worker_prefetch_multiplier == 1
    for name in GPU_TASKS:
        assert app.amqp.router.route({}, name)["queue"].name == GPU_QUEUE
    assert app.amqp.router.route({}, "governance.some_task")["queue"].name == "default"


def test_gpu_tasks_are_acked_late_and_rejected_on_worker_loss():
    # The real declarations (importing them registers them): every GPU task a worker runs must
    # be redelivered, not lost, when its worker dies mid-generation.
    import reenactment.tasks  # noqa: F401

    for name in GPU_TASKS:
        task = app.tasks[name]
        assert task.acks_late is True, name
        assert task.reject_on_worker_lost is True, name


def test_task_declarations_refuse_the_wrong_queue():
    import pytest

    with pytest.raises(ValueError, match="not listed"):
        gpu_task("reenactment.unlisted")
    with pytest.raises(ValueError, match="is a GPU task"):
        default_task(next(iter(GPU_TASKS)))
