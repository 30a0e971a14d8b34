"""Drift: is the traffic a served adapter answers still the traffic it was trained and evaluated for?

The reference is the production adapter's own answers to inputs of the task's distribution (see
`TaskKind.reference_rows`); the window is the audit log's records of the task since the last run,
streamed once (`Window.observe` keeps exact counts and a fixed-size uniform sample, so memory does
not grow with the log). Each signal is a test with a p-value whose null comes from the data
themselves (permutations of reference and window, or the standard two-sample tests), so its
threshold follows the reference's own spread rather than a fixed constant:

- input: sentence-embedding MMD (MiniLM, RBF kernel at the median distance, permutation p-value),
  input length (Kolmogorov-Smirnov), out-of-vocabulary share of words (permutation p-value);
- output: the task kind's (`TaskKind.output_signals`: label distribution, schema-valid rate, ...);
- confidence: calibrated confidence distribution (KS), with the escalation rate and the share under
  the escalation threshold reported beside it;
- quality without labels: agreement of the student with the teacher on a sample of the window
  (Wilson interval; one-sided test against the agreement measured at evaluation time) and the
  confidence-based estimate of accuracy (mean calibrated confidence, as NannyML's CBPE).

The verdict takes the smallest p-value, Bonferroni-corrected over the tests that ran: under
`drift.p_drift` it is `drift` (a retrain starts), under `drift.p_warn` `warn` (reported), else `ok`.

    window = Window(task, production_ref, kind, sample_size=500)
    for record in iter_audit(log, since, until): window.observe(record)
    report = assess(cfg, kind, reference, window, embed, rng)

| module | what |
|---|---|
| `statistics` | the two-sample tests (no model, no file) |
| `windows` | `Reference` and `Window` (the audit log streamed once) |
| `verdict` | signals and the verdict (`assess`) |
| `report` | the report and its plot |
| `sources` | the embedder, the reference answers, the teacher's sample |
"""
