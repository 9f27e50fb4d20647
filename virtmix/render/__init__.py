"""The render step: the Site's entries -> views -> domain and network XML (jinja2), checked and

explained.
"""
