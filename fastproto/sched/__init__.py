"""Scheduling: continuations (after NetBSD's kcont proposal) and their queues."""
from fastproto.sched.continuation import Continuation, ContinuationQueue, ManualClock

__all__ = ["Continuation", "ContinuationQueue", "ManualClock"]
