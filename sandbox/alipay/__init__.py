"""The Alipay half: Alipay's OpenAPI gateway (`POST /gateway.do`), server side.

precreate, query, close, refund and refund query, signed RSA2 both ways; QR codes a buyer
scans and pays; `trade_status_sync` notifications on Alipay's retry schedule.
"""
