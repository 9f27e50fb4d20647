"""The render step: a Site's entries -> views -> domain and network XML, checked and explained."""
