"""The engine layer: loading, checking and building models, generating, and spreading training
over devices. The stages share it; it imports `proactive_rl.shared`, never a stage."""
