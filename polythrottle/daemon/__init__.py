"""The PolyThrottle service (``polythrottle daemon``): a thin, long-running face over ``Tuner``.

Modules: ``config`` (the YAML file: ``DaemonConfig`` = the tune spec + the daemon's fields),
``service`` (``Daemon``, wiring the parts; ``check_config``), ``controller`` (bring-up, tune, reload,
restore, recover: synchronous), ``jobs`` (the queue and its coalescing), ``supervisor`` (signals,
watchdog, model-file watching, threads, shutdown), ``status`` (snapshot, state file, metrics hookup),
``protocol`` (control-socket commands and lines), ``server`` and ``client`` (the two ends of the socket),
``device_lock`` (serialized, cancellable device access), ``trust`` (what a client and a workload may
name), ``watcher`` (model-file polling), ``sdnotify`` (systemd notifications), ``metrics`` (Prometheus),
``statefile`` (what the daemon last applied, for ``status`` and crash recovery), ``wakeup`` (the
signal-safe event that wakes the supervisor's loop).
"""
