"""The worker side of Gaia: running one task on this machine.

:mod:`gaia.worker.runner` runs one execution of one process (a *task*) as a local process
tree, streams its output line by line, and stages its declared outputs for the caller to
publish. :mod:`gaia.worker.sandbox` seals the command (bubblewrap) and shows it its files
at their container paths; :mod:`gaia.worker.staging` lays those files out and collects
them, :mod:`gaia.worker.outputs` reads outputs without following links, and
:mod:`gaia.worker.limits` enforces a command's resources.
"""
