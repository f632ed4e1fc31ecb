"""The pipeline's stages, imported as `proactive_rl.stages` (pyproject maps the folders).

`stages/<name>/` is the stage `proactive_rl.stages.<name>` (prep, sft, rollout, grpo, eval,
sweep); `cli.py` is the `proactive` command, `common.py` its option decorators and start-up
checks. The layer below the stages is `engine/` (`proactive_rl.engine`) and the contracts are
`shared/` (`proactive_rl.shared`). No stage imports another stage: tests/unit/test_layers.py.
"""
