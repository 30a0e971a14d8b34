"""Each task type's endpoint half: what an endpoint teacher is asked and how its reply is read (`EndpointTask`).

One module per task type, beside the task kinds (`core.kinds`), whose teacher tasks add the local-model half to these.
They import no model code (no torch, transformers or grammar engine), so a worker that answers a pool over HTTP
(`core.teachers.fanout`) unpickles one of them and the `openai` backend in about half a second.
"""
