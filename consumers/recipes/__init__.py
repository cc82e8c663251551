"""Recipes: ready-made workflows that turn an event into Dastra commands and messages.

A package of the worker role, one concern per module:
`settings` (RECIPES_*), `expressions` (the JMESPath language), `language` (load and check recipe
files, render a step), `runner` (the recipe agents in the worker), `state` (runs in
dastra.recipe-runs.v1), `results` (step results from dastra.command-results.v1) and `privacy`
(triggers read under every payload mode).
"""
