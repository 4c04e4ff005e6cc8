// Peers the primary and secondary regions' virtual networks both ways.
param primaryVnetName string
param secondaryVnetName string

resource primaryVnet 'Microsoft.Network/virtualNetworks@2024-05-01' existing = {
  name: primaryVnetName
}

resource secondaryVnet 'Microsoft.Network/virtualNetworks@2024-05-01' existing = {
  name: secondaryVnetName
}

resource primaryToSecondary 'Microsoft.Network/virtualNetworks/virtualNetworkPeerings@2024-05-01' = {
  parent: primaryVnet
  name: 'to-${secondaryVnetName}'
  properties: {
    remoteVirtualNetwork: {
      id: secondaryVnet.id
    }
    allowVirtualNetworkAccess: true
    allowForwardedTraffic: false
    allowGatewayTransit: false
    useRemoteGateways: false
  }
}

resource secondaryToPrimary 'Microsoft.Network/virtualNetworks/virtualNetworkPeerings@2024-05-01' = {
  parent: secondaryVnet
  name: 'to-${primaryVnetName}'
  properties: {
    remoteVirtualNetwork: {
      id: primaryVnet.id
    }
    allowVirtualNetworkAccess: true
    allowForwardedTraffic: false
    allowGatewayTransit: false
    useRemoteGateways: false
  }
}
