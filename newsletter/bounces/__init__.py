"""Bounces and complaints after delivery (issue #14): VERP, classifying, matching, mailboxes.

- :mod:`~newsletter.bounces.verp`: ``VerpSigner(bounce_address, digest_id, key=...)`` makes
  the envelope sender ``bounces+<token>@domain`` of each delivery of one mailing;
  ``read_verp(address, bounce_address, key=...)`` gives ``(digest_id, subscriber_key)`` back
  for an address we made, else ``None``. ``verp_key(web_secret)`` derives the key.
- :mod:`~newsletter.bounces.classify`: ``classify(raw_bytes)`` says what a message in the
  bounce mailbox means (``hard``, ``soft``, ``complaint``, ``ignored``) and lists the clues to
  its delivery: VERP candidates, enclosed Message-IDs, failed recipients.
- :mod:`~newsletter.bounces.mailboxes`: ``open_mailbox(url, password=...)`` reads new messages
  from ``maildir:PATH`` or ``imaps://user@host/FOLDER`` exactly once, given a caller that
  records each result idempotently under ``message.key`` before calling ``done``.

- :mod:`~newsletter.bounces.matching`: ``find_delivery(conn, classification, ...)`` names the
  delivery a report is about: by VERP token, else exact Message-ID, else (with care, since
  anyone can write one) a failed recipient; what is trusted is said there.

Applying the result to the subscriber is the use case's (``newsletter.app.bounces``).
"""
