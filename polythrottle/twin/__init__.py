"""Digital twin of a Jetson board: physics (``model``) and workload intrinsics (``workloads``).

The ``sim:PROFILE`` device (``polythrottle.devices.sim``) wraps it as a Device.
"""
