// Azure Monitor for the recovery control plane: scheduled-query alert rules over the custom events the app
// sends to Application Insights (every outgoing event is also logged as a custom event named by its type
// without the `continuity.` prefix: continuity/adapters/azure/event_publisher.py), an action group whose
// receivers come from parameters, and a workbook with the estate view.
param location string
param appInsightsId string
param actionGroupName string
@maxLength(12)
param actionGroupShortName string = 'continuity'

@description('Email receivers: [{ name, emailAddress }]')
param emailReceivers array = []

@description('Webhook receivers (an on-call tool): [{ name, serviceUri }]')
param webhookReceivers array = []

@description('Replication lag, in seconds, above which the replication alert fires')
@minValue(1)
param replicationLagSeconds int = 300

param workbookDisplayName string = 'Continuity: recoverability estate'
param tags object = {}

var evaluation = {
  evaluationFrequency: 'PT5M'
  windowSize: 'PT15M'
}
var failing = {
  numberOfEvaluationPeriods: 1
  minFailingPeriodsToAlert: 1
}
var perTenant = [
  {
    name: 'tenant'
    operator: 'Include'
    values: [
      '*'
    ]
  }
]

resource actionGroup 'Microsoft.Insights/actionGroups@2023-01-01' = {
  name: actionGroupName
  location: 'Global'
  tags: tags
  properties: {
    groupShortName: actionGroupShortName
    enabled: true
    emailReceivers: [for r in emailReceivers: {
      name: r.name
      emailAddress: r.emailAddress
      useCommonAlertSchema: true
    }]
    webhookReceivers: [for r in webhookReceivers: {
      name: r.name
      serviceUri: r.serviceUri
      useCommonAlertSchema: true
    }]
  }
}

resource rpoBreached 'Microsoft.Insights/scheduledQueryRules@2023-03-15-preview' = {
  name: '${actionGroupName}-rpo-breached'
  location: location
  tags: tags
  kind: 'LogAlert'
  properties: {
    displayName: 'RPO breached'
    description: 'A tenant has no good backup within its RPO (continuity.rpo.breached)'
    severity: 1
    enabled: true
    evaluationFrequency: evaluation.evaluationFrequency
    windowSize: evaluation.windowSize
    scopes: [
      appInsightsId
    ]
    criteria: {
      allOf: [
        {
          query: 'customEvents | where name == "rpo.breached" | extend tenant = tostring(customDimensions.tenant)'
          timeAggregation: 'Count'
          operator: 'GreaterThan'
          threshold: 0
          dimensions: perTenant
          failingPeriods: failing
        }
      ]
    }
    autoMitigate: false
    actions: {
      actionGroups: [
        actionGroup.id
      ]
    }
  }
}

resource validationFailed 'Microsoft.Insights/scheduledQueryRules@2023-03-15-preview' = {
  name: '${actionGroupName}-validation-failed'
  location: location
  tags: tags
  kind: 'LogAlert'
  properties: {
    displayName: 'Restore validation failed'
    description: 'A tenant backup failed its restore validation: not recoverable (continuity.validation.failed)'
    severity: 1
    enabled: true
    evaluationFrequency: evaluation.evaluationFrequency
    windowSize: evaluation.windowSize
    scopes: [
      appInsightsId
    ]
    criteria: {
      allOf: [
        {
          query: 'customEvents | where name == "validation.failed" | extend tenant = tostring(customDimensions.tenant)'
          timeAggregation: 'Count'
          operator: 'GreaterThan'
          threshold: 0
          dimensions: perTenant
          failingPeriods: failing
        }
      ]
    }
    autoMitigate: false
    actions: {
      actionGroups: [
        actionGroup.id
      ]
    }
  }
}

resource recoveryChainBroken 'Microsoft.Insights/scheduledQueryRules@2023-03-15-preview' = {
  name: '${actionGroupName}-recovery-chain-broken'
  location: location
  tags: tags
  kind: 'LogAlert'
  properties: {
    displayName: 'Recovery chain broken'
    description: 'The chain a point-in-time recovery needs (base backup and WAL) is broken for a tenant or server'
    severity: 0
    enabled: true
    evaluationFrequency: evaluation.evaluationFrequency
    windowSize: evaluation.windowSize
    scopes: [
      appInsightsId
    ]
    criteria: {
      allOf: [
        {
          query: 'customEvents | where name == "recovery_chain.broken" | extend tenant = tostring(customDimensions.tenant)'
          timeAggregation: 'Count'
          operator: 'GreaterThan'
          threshold: 0
          dimensions: perTenant
          failingPeriods: failing
        }
      ]
    }
    autoMitigate: false
    actions: {
      actionGroups: [
        actionGroup.id
      ]
    }
  }
}

resource replicationLag 'Microsoft.Insights/scheduledQueryRules@2023-03-15-preview' = {
  name: '${actionGroupName}-replication-lag'
  location: location
  tags: tags
  kind: 'LogAlert'
  properties: {
    displayName: 'Replication lag over ${replicationLagSeconds} s'
    description: 'The geo-replica a regional failover would promote lags behind its primary'
    severity: 2
    enabled: true
    evaluationFrequency: evaluation.evaluationFrequency
    windowSize: evaluation.windowSize
    scopes: [
      appInsightsId
    ]
    criteria: {
      allOf: [
        {
          query: 'customEvents | where name == "replication.lag" | extend lag_seconds = todouble(customMeasurements.lag_seconds) | where lag_seconds > ${replicationLagSeconds}'
          timeAggregation: 'Count'
          operator: 'GreaterThan'
          threshold: 0
          failingPeriods: failing
        }
      ]
    }
    autoMitigate: true
    actions: {
      actionGroups: [
        actionGroup.id
      ]
    }
  }
}

resource workbook 'Microsoft.Insights/workbooks@2023-06-01' = {
  name: guid(resourceGroup().id, appInsightsId, 'continuity-estate-workbook')
  location: location
  tags: tags
  kind: 'shared'
  properties: {
    displayName: workbookDisplayName
    category: 'workbook'
    sourceId: appInsightsId
    serializedData: loadTextContent('../workbooks/estate.workbook.json')
  }
}

output actionGroupId string = actionGroup.id
output workbookId string = workbook.id
output alertRuleNames array = [
  rpoBreached.name
  validationFailed.name
  recoveryChainBroken.name
  replicationLag.name
]
