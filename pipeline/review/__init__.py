"""Deciding and reviewing: the alert policy (policy.py), reviewers' verdicts that silence or
license matches (verdicts.py), and the audit's HTML review page (report/)."""
