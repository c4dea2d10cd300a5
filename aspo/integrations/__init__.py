"""Plug-ins: aspo's policy losses and per-token logs inside other trainers.

- `aspo.integrations.trl`: `AspoGRPOTrainer`, a TRL `GRPOTrainer` whose loss is one of `aspo.losses.LOSSES`
  and which writes the `logs_schema` tables from inside its loss computation, per rank.
- `aspo.integrations.verl`: registers aspo's losses, and logging wrappers around verl's own, with verl's
  policy-loss registry, and dumps token tables from the actor process.

Neither framework is imported here. What both plug-ins share with the bundled trainer (update pass tensors ->
token rows, sequences, the `steps` metrics and their multi-rank sums) is `aspo.rows`: one definition per metric.
"""
