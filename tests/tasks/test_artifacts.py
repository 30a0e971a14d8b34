"""Prefect artifact keys made from task names."""


def test_artifact_keys_are_made_safe_from_any_valid_task_name():
    from tasks.artifacts import artifact_key

    assert artifact_key("Creditmix_KD.v2", "teacher", "unlabeled") == "creditmix-kd-v2-teacher-unlabeled"
