"""Decisions: what was served, kept for audit and replay.

* :mod:`server.decisions.stream`: the JetStream stream FUNNEL_DECISIONS (subjects per
  tenant and user hash, so erasure purges a user's decisions), lookup by request id;
* :mod:`server.decisions.log`: :class:`DecisionLog`, the non-blocking, bounded,
  drop-and-count logger the Recommender servicer hands each served response to;
* :mod:`server.decisions.replay`: ``funnel replay``: re-runs a logged request in
  process with the logged versions where still available and diffs the answers.
"""
