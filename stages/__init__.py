"""proactive-rl: the `stages/` folder, imported as `proactive_rl` (pyproject maps the folders).

`stages/<name>/` is the stage `proactive_rl.<name>` (prep, sft, rollout, grpo, eval); the modules
beside them (`generation`, `vllm_worker`, `models`, `parallel`, `common`) are the layer the
stages share, and `shared/` is `proactive_rl.shared`. No stage imports another stage.
"""
