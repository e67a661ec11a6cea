from twisted.application.service import ServiceMaker

twisted_hub = ServiceMaker("twisted-hub", "twisted_hub.tap", "Serve twisted-hub RPC hubs over WebSocket.", "hub")
