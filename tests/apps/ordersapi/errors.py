"""The application's own problem classes."""

from __future__ import annotations

from bastion import Conflict, Problem


class OrderAlreadyShipped(Conflict):
    """409: the order has left the warehouse."""

    code_default = "ORDER_ALREADY_SHIPPED"
    title_default = "Order already shipped"
    meaning = "The order has shipped; it can no longer be changed."
    action = "Open a return instead."


class PaymentDeclined(Problem):
    """The card issuer declined the payment."""

    status = 402
    code_default = "PAYMENT_DECLINED"
    title_default = "Payment declined"
