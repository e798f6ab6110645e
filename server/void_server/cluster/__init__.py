"""The Ray backend: `void-server serve --cluster ADDRESS` runs the same HTTP API and job store, and executes jobs
on long-lived Ray actors, one per GPU, each holding the pipeline resident (docs/cluster.md).

- `actor.py`     GpuWorker: the actor on a GPU machine (loads the pipeline once, runs jobs, reports progress)
- `transport.py` how inputs and results reach a worker: a shared path, or Ray's object store
- `executor.py`  RayExecutor: the API server's side of one actor (dispatch, progress, cancel, loss -> retry)
- `pool.py`      ClusterHost: connects to Ray, keeps one actor per free GPU as machines join and leave, health

Ray is optional (`pip install void-for-nuke[cluster]`); nothing here is imported in single-machine mode.
"""


def import_ray():
    try:
        import ray
    except ImportError as e:
        raise RuntimeError("--cluster needs Ray on this machine and every GPU machine: pip install "
                           "'void-for-nuke[cluster]' (or pip install 'ray>=2.40'): %s" % e)
    return ray
