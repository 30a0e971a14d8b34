"""Teachers: who answers the unlabeled pool for knowledge distillation, and their cached traces.

One module per backend behind one base (`base.Teacher`), chosen in one place (`backends.build_teacher`):

* `openai`: any OpenAI-compatible chat-completions endpoint, with retries and log-probabilities.
* `hf`: a local transformers model, zero-shot.
* `deliberate` (the embedded default): the base model made expensive on purpose — retrieved k-shot
  demonstrations and self-consistency votes.

What differs by task type (the request, reading a reply, local decoding, combining votes) comes from
the task kind as a `TeacherTask`; `core.kinds.make_teacher(cfg, pool)` puts the two together. What an endpoint is
asked and how its reply is read (`EndpointTask`, one module per task type in `asking/`) imports no model code, so that
a cluster worker asking an endpoint starts in under a second (`core.kinds.teacher_loader`).
`traces` stores answers on disk as they arrive, keyed by input hash.
"""
