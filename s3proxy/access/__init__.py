"""Private paths: access rules per site (``[[sites.NAME.access]]``) and their checks.

rules.py     pure: the rule tables -> frozen Rule values; the first rule matching a key path
secret.py    reads a rule's secrets ({ env = ... } / { file = ... }) when the site is built
basic.py     Basic auth against an htpasswd file of bcrypt lines (the bcrypt owner)
throttle.py  pure: failed attempts per client address
signed.py    pure: signed, expiring links (HMAC-SHA256)
"""
