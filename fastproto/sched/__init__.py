"""Scheduling: continuations (after NetBSD's kcont proposal) and their queues,
and where the stack's threads run (``one_cpu``)."""
from fastproto.sched.continuation import Continuation, ContinuationQueue, ManualClock
from fastproto.sched.cpu import one_cpu

__all__ = ["Continuation", "ContinuationQueue", "ManualClock", "one_cpu"]
