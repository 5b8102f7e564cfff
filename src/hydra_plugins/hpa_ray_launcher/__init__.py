"""hydra/launcher=ray for hpa: each job of a multirun runs as a Ray task (`pip install hpa[sweep]`).

The official hydra-ray-launcher 1.2.2 cannot be installed beside hpa: it pins cloudpickle<3 (for
its AWS launcher) while joblib 1.6, which scikit-learn pulls in, needs cloudpickle>=3. This is
its local launcher (MIT, Facebook, Inc.), with the same config keys (`hydra.launcher.ray.init.*`
go to `ray.init`, `hydra.launcher.ray.remote.*` to `ray.remote`), plus a GPU share chosen from the
cluster and a fresh worker process per job. Ray is imported only when a multirun launches.
"""
