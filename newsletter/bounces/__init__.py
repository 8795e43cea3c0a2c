"""Bounces and complaints after delivery (issue #14): the parts that need no store.

- :mod:`~newsletter.bounces.verp`: ``verp_address(bounce_address, digest_id, subscriber_key,
  key=...)`` makes the envelope sender ``bounces+<token>@domain`` for one delivery;
  ``read_verp(address, bounce_address, key=...)`` gives ``(digest_id, subscriber_key)`` back
  for an address we made, else ``None``. ``verp_key(web_secret)`` derives the key.
- :mod:`~newsletter.bounces.classify`: ``classify(raw_bytes)`` says what a message in the
  bounce mailbox means (``hard``, ``soft``, ``complaint``, ``ignored``) and lists the clues to
  its delivery: VERP candidates, enclosed Message-IDs, failed recipients.
- :mod:`~newsletter.bounces.mailboxes`: ``open_mailbox(url, password=...)`` reads new messages
  from ``maildir:PATH`` or ``imaps://user@host/FOLDER`` exactly once, given a caller that
  records each result idempotently under ``message.key`` before calling ``done``.

Matching a delivery: try ``read_verp`` on each ``verp_candidates`` entry, then the
``message_ids`` against the deliveries' Message-IDs, then ``recipients`` against subscriber
addresses (a fallback that a forged message can also name: prefer the first two).
"""
