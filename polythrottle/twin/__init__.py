"""Digital twin of a Jetson board: physics (``model``), its declared parameters (``params``) and workload
intrinsics (``workloads``).

The ``sim:PROFILE`` device (``polythrottle.devices.sim``) wraps it as a Device.
"""
