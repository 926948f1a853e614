"""Experiments: a grid of attacks x defenses x seeds over shared, resumable stages.

Three seeds are kept apart (``seeds`` in the config):

- the **world** seed W: the synthetic world (added to ``data.synth.seed``), the model's random
  initialisation (added to ``model.seed``) and the pretraining data order (added to
  ``pretrain.seed``);
- the **implant** seed I: which pairs are poisoned, the trigger's draw, the implant's data order;
- the **clean** seed C: the defense's data order, augmentations and subtext draws.

``seeds: [0, 1, 2]`` is short for ``{world: [0], implant: [0, 1, 2], clean: paired}``: each
backdoored model cleaned once, with the clean seed equal to its implant seed. A mapping varies
each axis independently (the product of the lists).

Stages, each a run folder under the experiment folder, computed once and reused:
``world<W>/data`` (the synthetic world, when the config asks for it), ``world<W>/pretrain`` (a
clean CLIP), per attack and implant seed ``world<W>/<attack>/implant<I>/poison`` and
``.../backdoored``, and per defense and clean seed ``.../<defense>/clean<C>``. Every model is
evaluated once (``eval.json`` beside it) on the test split and, when the data has one, the
validation split. A stage whose output is complete is skipped, so an interrupted run resumes
where it stopped. Independent stages run in parallel with ``jobs`` > 1.

Results: ``results.json`` (one row per attack, defense and seed triple, clean-model rows
included), ``aggregate.json`` (means, intervals, paired comparisons), ``results.md`` and
``results.png``; ``environment.json`` records the machine and software.

The package: ``config`` (the YAML's dataclass, loaded and checked; ``convert``, ``sections``,
``specs`` and ``seeds`` type its parts), ``layout`` (every path of the folder), ``grid`` (units
and the stages' order), ``stages`` (each stage a function), ``settings`` (each stage's training
settings), ``world`` (a world's data and starting model), ``results`` (rows and reports) and
``runner`` (:class:`Experiment`, one folder).
"""
from .config import ExperimentConfig, load_config, parse_config, resolve_paths
from .results import KEY_METRICS, METRICS, selection_markdown
from .runner import Experiment
from .sections import DATA_PATHS, DataConfig, ModelConfig
from .seeds import SeedPlan
from .specs import AttackSpec, DefenseSpec

__all__ = ["AttackSpec", "DATA_PATHS", "DataConfig", "DefenseSpec", "Experiment", "ExperimentConfig", "KEY_METRICS",
           "METRICS", "ModelConfig", "SeedPlan", "load_config", "parse_config", "resolve_paths", "selection_markdown"]
