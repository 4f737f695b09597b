"""The runtime rehearsal: every notebook, run on this CPU as Colab (CPU, T4, L4, A100) and an
H100 would run it, with stand-ins for the GPU stack that enforce the pinned libraries'
contracts (``runner`` runs it, ``simulate`` is the simulated runtime, ``standins/`` hold the
stand-in packages, ``contracts`` ties each stand-in rule to the pinned source it comes from).
"""
