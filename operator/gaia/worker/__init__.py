"""The worker side of Gaia: running one task on this machine.

:mod:`gaia.worker.runner` runs one execution of one process (a *task*) as a local process
tree, streams its output line by line, and stages its declared outputs for the caller to
publish. :mod:`gaia.worker.sandbox` decides how the command sees its files at their
container paths: under bubblewrap, or by rewriting the paths in its command line.
"""
