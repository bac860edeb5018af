"""RQ jobs and the worker and scheduler entry points.

Job functions are thin: they take ids, open what they need and call a service.
Nothing here connects to Redis at import time (workers fork after importing).
"""
