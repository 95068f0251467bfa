"""The PolyThrottle service (``polythrottle daemon``): a thin, long-running face over ``Tuner``.

Modules: ``config`` (the YAML file, validated), ``service`` (main loop, worker thread, signals),
``server`` (the control socket), ``device_lock`` (serialized, cancellable device access), ``watcher``
(model-file polling), ``sdnotify`` (systemd notifications), ``metrics`` (Prometheus),
``statefile`` (what the daemon last applied, for ``status`` and crash recovery).
The control-socket client is ``polythrottle.control``.
"""
