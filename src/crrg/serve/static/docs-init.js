"use strict";
// Swagger UI, served by the service itself (no CDN); see crrg/serve/openapi.py.
window.ui = SwaggerUIBundle({ url: "/openapi.json", dom_id: "#swagger-ui", deepLinking: true,
  presets: [SwaggerUIBundle.presets.apis], layout: "BaseLayout" });
