"""Digital twin of a Jetson board: physics (``model``), its declared parameters (``params``), workload
intrinsics (``workloads``) and the manufacturing spread between units of one board (``units``).

The ``sim:PROFILE`` device (``polythrottle.devices.sim``) wraps it as a Device.
"""
